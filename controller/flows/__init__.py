"""Multi-step operations as flows of steps, each with a rollback."""
