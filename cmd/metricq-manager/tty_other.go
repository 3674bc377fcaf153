//go:build !linux

package main

import (
	"io"
	"os"
)

// isTerminal reports whether w is a terminal (so the table can be redrawn
// in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// terminalWidth is w's width in columns, 0 if unknown.
func terminalWidth(io.Writer) int { return 0 }
