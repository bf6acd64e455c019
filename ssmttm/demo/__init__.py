"""The offline demo: a synthetic corpus laid out exactly like MTG-Jamendo, and tiny real-class weights."""
