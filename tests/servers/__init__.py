"""Real servers the tests start themselves on loopback; a missing binary fails the run."""
