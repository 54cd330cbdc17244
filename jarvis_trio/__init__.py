"""jarvis-trio: streaming chat where the latest prompt always wins."""
