"""Similar-image search: collections of the caller's ids, stored in Redis, searched in memory."""
