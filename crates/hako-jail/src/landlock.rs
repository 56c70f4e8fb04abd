//! landlock (being written)
