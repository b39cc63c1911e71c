"""Stamina, the job queue, the dispatcher and its workers."""
