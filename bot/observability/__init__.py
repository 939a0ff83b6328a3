"""Running it as a service: metrics, health and readiness, JSON logs (see docs/operations.md)."""
