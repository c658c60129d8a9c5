"""HTTP surface: one blueprint per area, documented with Flasgger (Swagger 2.0)."""
