//! Images opened read-only (to come).
