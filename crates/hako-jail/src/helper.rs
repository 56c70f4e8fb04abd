//! helper (being written)
