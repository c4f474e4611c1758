//! The web edge: the responses the functions answer with, and the links and
//! signed values a browser or Graph carries back to us.

pub mod links;
pub mod response;
pub mod signing;
