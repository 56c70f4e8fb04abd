//! hako-api
