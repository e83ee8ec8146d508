//! meshwasm SDK: the pure, testable pieces plugins share. Grows with the
//! plugins (CEL, Istio metrics, peer metadata, XFCC in later issues).

pub mod property;
