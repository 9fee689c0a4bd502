# The serving image: no torch, no compilers. Build: docker build -t crossroute:local .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY router ./router
COPY streams ./streams
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 crossroute
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER crossroute
ENV HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
ENTRYPOINT []
CMD ["crossroute", "--help"]
