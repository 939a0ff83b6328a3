"""Chat adapters: translate platform traffic to job-service calls and events to messages."""
