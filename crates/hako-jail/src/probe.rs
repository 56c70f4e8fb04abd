//! probe (being written)
