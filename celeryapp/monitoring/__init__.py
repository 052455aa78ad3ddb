"""Operator commands: the Flower launcher and its configuration (:mod:`.flower`,
:mod:`.flowerconfig`), the Prometheus exporter (:mod:`.metrics`) and the health
checks (:mod:`.health`)."""
