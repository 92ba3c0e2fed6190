"""Tests against the real containers/storage (Go) sharing a directory with journalstore."""
