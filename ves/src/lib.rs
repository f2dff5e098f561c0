//! Pure VES byte layouts (placeholder).
