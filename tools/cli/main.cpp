// The `lintime` command-line tool.
#include <cstdio>
int main() { std::puts("lintime: subcommands are being written"); return 1; }
