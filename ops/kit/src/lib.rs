//! What every Atoll process shares at run time.
