/* Every applet's main, listed in metac.c's table. */
#ifndef METAC_APPLETS_H
#define METAC_APPLETS_H

int block_main(int argc, char **argv);
int compute_main(int argc, char **argv);
int daemon_main(int argc, char **argv);
int desktop_main(int argc, char **argv);
int file_main(int argc, char **argv);
int fs_main(int argc, char **argv);
int net_main(int argc, char **argv);
int node_main(int argc, char **argv);
int ref_main(int argc, char **argv);
int run_main(int argc, char **argv);
int sound_main(int argc, char **argv);
int stream_main(int argc, char **argv);
int usb_main(int argc, char **argv);
int vm_main(int argc, char **argv);

#endif
