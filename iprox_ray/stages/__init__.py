"""Pipeline stages: where the maths, the store and the execution layer meet."""
