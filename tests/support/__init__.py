"""What tests share: harnesses, builders, processes. Tests import helpers from here, never from other test modules."""
