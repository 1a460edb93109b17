//! The audit seal key: made once, kept in the token, its MACs stable across a restart.
