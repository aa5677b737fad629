//! kassa-stripe-sim
