"""The thin API: validates, writes, enqueues and reads. It never loads a model."""
