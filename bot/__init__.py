"""videobot: slash command in, AI video out."""
