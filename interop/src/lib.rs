//! Nothing here: the interop scenarios are integration tests (`tests/`).
