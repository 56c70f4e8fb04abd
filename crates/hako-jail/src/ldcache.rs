//! ldcache (being written)
