//! Black-box tests of the client against a real wxtoken server and a wechat-emulator,
//! both in-process on loopback (one binary, zero2prod style).

mod errors;
mod helpers;
mod invalidate;
mod jssdk;
mod single_flight;
mod tokens;
mod with_token;
