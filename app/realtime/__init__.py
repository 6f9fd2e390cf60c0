"""Realtime: entity changes pushed to Socket.IO subscribers (both protocol generations)."""
