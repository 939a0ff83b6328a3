"""The Discord adapter: slash commands, live status messages, result buttons, reactions."""
