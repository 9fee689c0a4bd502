#!/bin/sh
# Start docker-compose.yml's broker: on the first start, format the KRaft storage with the SCRAM
# users of stack/secrets/kafka.env (crossroute stack compose-secrets); then run the broker with the
# server.properties made next to its keystore. Passwords come from the environment only: they are
# never written into the image or onto the data volume (KRaft stores salted SCRAM hashes).
set -eu
: "${KAFKA_HOME:=/opt/kafka}"
: "${CROSSROUTE_KAFKA_PROPERTIES:=/etc/crossroute/kafka/server.properties}"
props="$CROSSROUTE_KAFKA_PROPERTIES"
[ -r "$props" ] || { echo "kafka-start: $props missing: run crossroute stack compose-secrets" >&2; exit 2; }
data=$(sed -n 's/^log\.dirs=//p' "$props")
if [ ! -f "$data/meta.properties" ]; then
  m="$KAFKA_SCRAM_MECHANISM"
  "$KAFKA_HOME/bin/kafka-storage.sh" format --ignore-formatted -t "$KAFKA_CLUSTER_ID" -c "$props" \
    --add-scram "$m=[name=$KAFKA_ADMIN_USER,password=$KAFKA_ADMIN_PASSWORD]" \
    --add-scram "$m=[name=$KAFKA_WORKER_USER,password=$KAFKA_WORKER_PASSWORD]" \
    --add-scram "$m=[name=$KAFKA_PUBLISHER_USER,password=$KAFKA_PUBLISHER_PASSWORD]" \
    --add-scram "$m=[name=$KAFKA_API_USER,password=$KAFKA_API_PASSWORD]"
fi
unset KAFKA_ADMIN_PASSWORD KAFKA_WORKER_PASSWORD KAFKA_PUBLISHER_PASSWORD KAFKA_API_PASSWORD
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$props"
