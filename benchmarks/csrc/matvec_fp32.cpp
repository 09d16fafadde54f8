// Batch-1 fp32 products over one token's matrices of SmolLM2-135M (30 x [q;k;v], o, [gate;up], down, and the 49152-row
// head: 540 MB), 2 OpenMP threads, one parallel region per matrix as the step has: four rows side by side (the step
// until 2026-12-03, with and without its software prefetch), one row at a time (with prefetches at several distances),
// and a plain streaming read of the same bytes, the ceiling of any batch-1 fp32 decoder on the machine.
//   g++ -O3 -mavx2 -mfma -fopenmp benchmarks/csrc/matvec_fp32.cpp -o /tmp/matvec_fp32 && OMP_NUM_THREADS=2 /tmp/matvec_fp32 25
// Prints, per variant, the median and best of the rounds in tokens/s (one token = one pass over all the matrices).
#include <immintrin.h>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <sys/mman.h>
#include <algorithm>
static inline float hsum(__m256 v){__m128 s=_mm_add_ps(_mm256_castps256_ps128(v),_mm256_extractf128_ps(v,1));s=_mm_add_ps(s,_mm_movehl_ps(s,s));return _mm_cvtss_f32(_mm_add_ss(s,_mm_movehdup_ps(s)));}
static long PF = 4;
static void cur(const float*W,const float*x,float*y,long r0,long r1,long in){
 for(long r=r0;r<r1;r+=4){__m256 a[8];for(int k=0;k<8;k++)a[k]=_mm256_setzero_ps();const float*w=W+r*in;
  for(long i=0;i<in;i+=16){__m256 x0=_mm256_loadu_ps(x+i),x1=_mm256_loadu_ps(x+i+8);
   if(PF){const char*p=(const char*)w+PF*4*in*4+256*(i/16);for(int j=0;j<4;j++)_mm_prefetch(p+64*j,_MM_HINT_T0);}
   for(int k=0;k<4;k++){a[2*k]=_mm256_fmadd_ps(_mm256_loadu_ps(w+k*in+i),x0,a[2*k]);a[2*k+1]=_mm256_fmadd_ps(_mm256_loadu_ps(w+k*in+i+8),x1,a[2*k+1]);}}
  for(int k=0;k<4;k++)y[r+k]=hsum(_mm256_add_ps(a[2*k],a[2*k+1]));}}
static long PFB = 0; // bytes ahead for row1
static void row1(const float*W,const float*x,float*y,long r0,long r1,long in){
 for(long r=r0;r<r1;r++){__m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0;const float*w=W+r*in;
  for(long i=0;i<in;i+=32){
   if(PFB){const char*p=(const char*)(w+i)+PFB;_mm_prefetch(p,_MM_HINT_T0);_mm_prefetch(p+64,_MM_HINT_T0);}
   a0=_mm256_fmadd_ps(_mm256_loadu_ps(w+i),_mm256_loadu_ps(x+i),a0);a1=_mm256_fmadd_ps(_mm256_loadu_ps(w+i+8),_mm256_loadu_ps(x+i+8),a1);
   a2=_mm256_fmadd_ps(_mm256_loadu_ps(w+i+16),_mm256_loadu_ps(x+i+16),a2);a3=_mm256_fmadd_ps(_mm256_loadu_ps(w+i+24),_mm256_loadu_ps(x+i+24),a3);}
  y[r]=hsum(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)));}}
static void stream(const float*W,const float*x,float*y,long r0,long r1,long in){
 __m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0;const float*w=W+r0*in,*e=W+r1*in;
 for(;w<e;w+=32){a0=_mm256_add_ps(a0,_mm256_loadu_ps(w));a1=_mm256_add_ps(a1,_mm256_loadu_ps(w+8));a2=_mm256_add_ps(a2,_mm256_loadu_ps(w+16));a3=_mm256_add_ps(a3,_mm256_loadu_ps(w+24));}
 y[r0]=hsum(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)));}
typedef void(*K)(const float*,const float*,float*,long,long,long);
int main(int argc,char**argv){
 struct M{long o,i;}; std::vector<M> ms; for(int l=0;l<30;l++){ms.push_back({960,576});ms.push_back({576,576});ms.push_back({3072,576});ms.push_back({576,1536});} ms.push_back({49152,576});
 size_t tot=0; std::vector<size_t> off; for(auto&m:ms){off.push_back(tot);tot+=m.o*m.i*4;}
 size_t sz=(tot+(2<<20))/(2<<20)*(2<<20); float*B; posix_memalign((void**)&B,2<<20,sz); madvise(B,sz,MADV_HUGEPAGE);
 for(size_t i=0;i<tot/4;i++)B[i]=(i%7)*0.01f;
 std::vector<float> x(1536,0.5f),y(49152);
 const char* names[]={"cur(4rows,pf4)","cur(4rows,nopf)","row1","row1,pf512","row1,pf1024","row1,pf2048","stream"};
 int nv=7; int rounds=atoi(argv[1]);
 std::vector<std::vector<double>> t(nv);
 for(int R=0;R<rounds;R++) for(int v=0;v<nv;v++){
  K k = v<2?cur:(v<6?row1:stream); PF = v==0?4:0; PFB = v==3?512:v==4?1024:v==5?2048:0;
  auto t0=std::chrono::steady_clock::now();
  int N=10; for(int n=0;n<N;n++) for(size_t j=0;j<ms.size();j++){ const float*W=B+off[j]/4; long o=ms[j].o,in=ms[j].i;
   int step = (v>=2&&v<6)?1:4;
   #pragma omp parallel
   { int nt=omp_get_num_threads(),tid=omp_get_thread_num(); long nb=o/4, c=(nb+nt-1)/nt, b0=tid*c, b1=std::min(nb,b0+c); if(b0<b1) k(W,x.data(),y.data(),4*b0,4*b1,in);} }
  double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count(); t[v].push_back(N/s);}
 for(int v=0;v<nv;v++){auto a=t[v];std::sort(a.begin(),a.end());printf("%-18s median %.1f best %.1f tok/s  (%.1f GB/s)\n",names[v],a[a.size()/2],a.back(),a[a.size()/2]*tot/1e9);}
}
