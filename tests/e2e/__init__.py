"""End-to-end tests: the real ``bastion`` process (uvicorn in a subprocess) over real sockets."""
