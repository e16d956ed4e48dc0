//! IR text form: printer and parser.
