"""Persistence: SQLAlchemy models, sessions, claims and Alembic migrations.

The only package that imports SQLAlchemy.
"""
