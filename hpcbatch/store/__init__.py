"""The durable store: the schema (every table), queries, the event log."""
