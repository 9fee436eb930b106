"""The watcher daemon: receives OTLP trace exports and keeps the ledger of billed responses."""
