//! mounts (being written)
