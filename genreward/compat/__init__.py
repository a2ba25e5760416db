"""Small, explicit compatibility steps for third-party packages (one module each)."""
