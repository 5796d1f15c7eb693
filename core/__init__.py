"""The leaf layer every other package may import: errors, the pipeline's shape constants, the backend interfaces and
the one table that says what kind of file a path is. It imports nothing of the project's and nothing heavy."""
