//! Installing the filter, and the user-notification listener.
