"""Turn results files into tables, leaderboards, comparisons and pictures."""
