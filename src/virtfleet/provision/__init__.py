"""Multi-step operations that make things (create, clone, templates), each with rollback."""
