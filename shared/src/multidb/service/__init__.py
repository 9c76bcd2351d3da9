"""Role-service app factory."""
