"""Seeing what the bot does: Prometheus metrics and a health check on one small HTTP server
(METRICS_PORT), and JSON log lines that carry each request's ids (LOG_FORMAT=json)."""
