"""The entity-store platform: a REST and Socket.IO API over MongoDB."""
