//! Fuzz target: `calc::evaluate` on arbitrary UTF-8 must return (never panic, never overflow
//! the stack), and any number it returns must be finite and formattable.
#![no_main]

use crane_core::calc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    match calc::evaluate(expr) {
        Ok(value) => {
            assert!(value.is_finite(), "{expr:?} evaluated to {value}");
            let _ = calc::format_number(value);
            let _ = calc::to_json_number(value);
        }
        Err(error) => {
            // Positions point into the input or one past its end.
            let chars = expr.chars().count();
            assert!(
                error.position >= 1 && error.position <= chars + 1,
                "{expr:?}: {error:?}"
            );
            let _ = error.to_string();
        }
    }
});
