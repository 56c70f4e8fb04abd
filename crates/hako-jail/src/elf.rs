//! elf (being written)
