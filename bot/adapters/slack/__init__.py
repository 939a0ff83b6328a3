"""The Slack adapter (slack-bolt AsyncApp): see app.py for the wiring, docs/slack.md for setup."""
