"""Puts this directory on sys.path (pytest does so for a rootdir conftest), so tests `import factories`."""
