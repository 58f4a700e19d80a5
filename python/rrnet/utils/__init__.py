"""Small helpers every layer uses: atomic file writes and progress reporting."""
