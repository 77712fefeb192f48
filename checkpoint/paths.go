package checkpoint

import "strings"

// Paths are relative to the mount root, with no leading or trailing "/";
// the root itself is "".

// parentDir is the directory that holds p ("" for an entry of the root).
func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// baseName is p's final name.
func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// dirPrefix is what the paths beneath dir start with.
func dirPrefix(dir string) string {
	if dir == "" {
		return ""
	}
	return dir + "/"
}
