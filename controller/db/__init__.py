"""The controller's resource model and database access."""
