"""Trained heads shipped with crossroute, one folder each (``head.json`` + weights); see
:mod:`models.shipped`."""
